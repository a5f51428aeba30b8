"""Todos: the core domain. Event-sourced on the write side, served from read models."""
