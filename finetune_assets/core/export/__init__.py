"""Export of a trained model into packages OpenSearch ml-commons can register."""
