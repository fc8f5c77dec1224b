"""Origin: the studio's from-scratch, text-conditioned manga diffusion model and its trainer."""
