"""The crew that thinks: roles, their models, the offline policy, and the path from an idea to a reviewed edit."""
