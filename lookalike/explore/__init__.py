"""Explore a catalog's latent space: interpolation, traversals, arithmetic, maps, clusters, imputation."""

from lookalike.explore.arithmetic import latent_arithmetic, parse_expression
from lookalike.explore.clusters import cluster_catalog, contact_sheets, export_csv, import_labels
from lookalike.explore.impute import impute
from lookalike.explore.interpolate import interpolate, lerp, slerp
from lookalike.explore.maps import catalog_map, save_map_html, save_map_png
from lookalike.explore.space import LatentSpace, Match
from lookalike.explore.traverse import rank_dimensions, traverse

__all__ = [
    "LatentSpace",
    "Match",
    "interpolate",
    "lerp",
    "slerp",
    "traverse",
    "rank_dimensions",
    "latent_arithmetic",
    "parse_expression",
    "catalog_map",
    "save_map_png",
    "save_map_html",
    "cluster_catalog",
    "export_csv",
    "contact_sheets",
    "import_labels",
    "impute",
]
