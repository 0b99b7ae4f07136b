"""Turning frames into the files we serve: MP4, thumbnail, spritesheet."""
