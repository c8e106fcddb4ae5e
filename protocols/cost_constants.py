"""Fitted cost-model constants read by ``protocols.advisor`` (written by benchmarks/cost_model.py;
fit and held-out error in benchmarks/results/cost_model.md). Placeholder until the first fit."""
FIT = {}
