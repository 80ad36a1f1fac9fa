"""Cloudify plugin ``aws``: EC2 resources managed from Cloudify blueprints."""
