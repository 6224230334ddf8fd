"""What tests and users share: real local services on loopback and tiny seeded fixtures."""
