"""Competition data: layout checks, the manifest, the demo generator."""
