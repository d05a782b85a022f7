"""Synthetic object and scene renders with exact depth, masks and normals (OpenGL or numpy backends)."""
