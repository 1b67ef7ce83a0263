"""The hospital site: Flower ClientApp and the site's local data and privacy state."""
