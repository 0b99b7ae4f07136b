"""Media inputs: fetching URLs under the SSRF policy, and checking images and audio."""
