"""Training, evaluation and packaging for TACE Response models. Imports TACEResponseLib, never the reverse."""
