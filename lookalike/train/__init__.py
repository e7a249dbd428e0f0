"""Training: metric learning and latent variable models (VAE, beta-VAE, WAE)."""
