"""Bag replay: offline (the Localizer over a bag) and live (the real node over DDS), and plots."""
