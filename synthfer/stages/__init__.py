"""Pipeline stages, one concern each: identities -> edit -> (assess -> decide) -> encode."""
