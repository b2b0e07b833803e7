"""Pure-PyTorch networks synthfer runs: the StyleGAN2 generator and the EmoStyle latent editor."""
