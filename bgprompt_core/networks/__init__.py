"""The frozen depth network D: what bgprompt knows of each family (spec, no torch), loading, phi, export-time folding."""
