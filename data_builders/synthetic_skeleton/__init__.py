"""Synthetic NTU-25 skeleton temporal-action-localization dataset."""
