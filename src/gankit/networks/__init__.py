"""Plain torch.nn generators and discriminators, one file per family."""
