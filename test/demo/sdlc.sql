-- Placeholder: the lead replaces this with the SDLC walk-through.
CREATE EXTENSION IF NOT EXISTS parflow;
SELECT 'demo placeholder';
