"""BABEL (dense frame labels over AMASS mocap) as NTU-25 skeleton sequences.

Kept import-light on purpose: conversion workers import ``amass`` / ``smplh``
from this package and should not pay for TFDS.
"""
