"""SageMaker training jobs for the training entry point (boto3 only; no Dagster import).

The Dagster side (``finetune_assets.resources.sagemaker_pipes``) opens the Pipes session and calls these modules for
everything that talks to AWS. Every AWS call made here:

- S3 ``ListObjectsV2`` on the ``train`` channel prefix: fingerprints the input (keys, sizes, ETags) so the job
  name changes when the data changes (:func:`.naming.fingerprint_s3_prefix`).
- S3 ``HeadObject`` + ``PutObject`` (``upload_file``): the source tarball, stored under its content hash so the
  same code is uploaded once (:func:`.source.upload_source_tarball`; toolkit launch only).
- SageMaker ``DescribeTrainingJob``: looks for a job with the deterministic name (and its retries ``-r2``,
  ``-r3``, ...) to re-attach instead of creating a duplicate (:func:`.jobs.resolve_job`), then polls with backoff
  (:func:`.jobs.wait_for_job`), streaming ``SecondaryStatusTransitions`` to a callback.
- SageMaker ``CreateTrainingJob`` (:func:`.jobs.create_job`, request from :mod:`.request`); a name conflict from a
  concurrent run re-attaches.
- SageMaker ``StopTrainingJob`` (:func:`.jobs.stop_job`) when the orchestrator is interrupted.
- S3 ``GetObject`` (``download_file``) of ``ModelArtifacts.S3ModelArtifacts`` (``model.tar.gz``), untarred with
  the tarfile ``data`` filter into a local folder (:func:`.artifacts.download_model`).

Two ways to start the entry point in the container (``TrainingJobSpec.launch``): ``"toolkit"`` (default), a
SageMaker framework image (:mod:`.images`) running the uploaded source tarball (:mod:`.source`), or
``"entrypoint"``, a custom image with the project installed (:mod:`.request`).
"""
