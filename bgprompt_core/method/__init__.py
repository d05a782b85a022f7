"""The paper's method in torch: prompts (1-BG, PNet), Eq. 1 compositing, Eq. 2, the prompted model, Eqs. 3-4, checkpoints."""
