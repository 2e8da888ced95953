"""Readers of kernel artifacts and kernel text shared by every layer (no BCC, no root)."""
