"""collap-indexer: index music catalogs with CoLLAP embeddings in Qdrant and search them."""
