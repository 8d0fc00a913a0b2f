"""Operating-system seams: network guard, process hardening, files, temp dir, retention, systemd."""
