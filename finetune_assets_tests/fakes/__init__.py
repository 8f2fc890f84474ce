"""Fakes and local servers the tests run against (moto, osmem, ml-commons contract fake, stubs)."""
