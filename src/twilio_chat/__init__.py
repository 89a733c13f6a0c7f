"""Twilio Chat."""
