"""Code that runs inside a serving container (SageMaker inference); it imports neither Dagster nor boto3."""
