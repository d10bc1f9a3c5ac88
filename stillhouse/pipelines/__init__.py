"""Luigi DAG, run config and CLI. Imports the libraries; the libraries never import this package."""
