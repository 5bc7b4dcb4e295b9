"""Training of the prompt policy's semantic adapter (torch at run time) and the prompt sets it reads."""
