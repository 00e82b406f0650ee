"""Reporters: plain functions from one AuditResult to one output format."""
