"""Clustering for AMix-C: faiss k-means and the Online Deep Clustering (ODC) memory."""

from lightly_amix.clustering.kmeans import assign, faiss_num_gpus, kmeans
from lightly_amix.clustering.odc import ODCMemory

__all__ = [
    "ODCMemory",
    "assign",
    "faiss_num_gpus",
    "kmeans",
]
