"""Gemini CLI integration: `deepseek-proxy gemini setup` (setup.py) and the Gemini part of `doctor` (doctor.py).

Gemini CLI (0.61) reaches a gateway through two environment variables, GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY,
and needs `security.auth.selectedType: "gemini-api-key"` in ~/.gemini/settings.json (without it, the base URL
variable alone selects the "gateway" auth type and `gemini -p` exits 41). It reads the variables from the shell, else
from the first `.env` it finds: `.gemini/.env` or `.env` in the working directory or a parent, else ~/.gemini/.env,
else ~/.env. A `.gemini/.env` (the home one included) is read only in a folder Gemini CLI trusts (folder trust is on
by default); the shell's values always win.
"""
