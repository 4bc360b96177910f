"""Tools that read finished runs: linear probe, geometry, export."""
