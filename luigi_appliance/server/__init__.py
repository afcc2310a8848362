"""The HTTPS front of the scheduler: Luigi's Tornado app behind one guard, and the serve loop."""
