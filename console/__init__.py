"""The data steward console: a web app over the warehouse (review queue, lead explorer, splits)."""
