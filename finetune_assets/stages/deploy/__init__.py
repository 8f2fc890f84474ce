"""deploy: the OpenSearch package (model_package), an optional SageMaker endpoint (model_endpoint), the model
registered in ml-commons (registered_model_id), and the hybrid search to run with it (search_pipeline)."""
from finetune_assets.stages.deploy.model_endpoint import model_endpoint
from finetune_assets.stages.deploy.model_package import model_package
from finetune_assets.stages.deploy.registered_model_id import registered_model_id
from finetune_assets.stages.deploy.search_pipeline import search_pipeline

assets = [model_package, model_endpoint, registered_model_id, search_pipeline]
asset_checks = []
sensors = []
