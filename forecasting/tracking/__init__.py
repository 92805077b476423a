"""MLflow: runs, the pyfunc model and the model registry."""
