"""Latent variable models of a catalog (VAE, beta-VAE, WAE-MMD) and their trainer."""

from lookalike.train.vae.models import VAE, WAE, BetaVAE, build_model
from lookalike.train.vae.trainer import TrainResult, VAETrainConfig, train_vae

__all__ = ["VAE", "BetaVAE", "WAE", "build_model", "VAETrainConfig", "TrainResult", "train_vae"]
