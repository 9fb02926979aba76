//! VPN and protocol detectors (not yet implemented: the VPN-detection issue builds them).
