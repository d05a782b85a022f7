"""Datasets with one sample schema, and the sample transforms shared by all loaders."""
