"""recommender: ferry's second reference workload, top-k item recommendation on MovieLens 100K (#16)."""
