"""Results pages: each regenerates a results/*.md (and .png) from its committed CSV."""
