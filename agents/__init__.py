"""autoresearch-crew: a multi-agent crew that runs ML experiments on train.py overnight."""
