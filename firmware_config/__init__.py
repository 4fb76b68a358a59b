"""Provisioning and configuration: keys, config schema, procedure profiles, Pi firmware fragments."""
