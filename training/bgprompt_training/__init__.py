"""bgprompt_training: the offline side of bgprompt (data, training, evaluation, export) and the CLI."""
