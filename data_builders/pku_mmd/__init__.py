"""PKU-MMD phase 1 skeleton action-detection dataset (TFDS builder).

Kept import-free: conversion workers import ``raw_files`` through this
package and must not pay for TFDS.
"""
