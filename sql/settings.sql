-- settings: bounds, check hooks, contexts, the reserved prefix, and that no
-- setting holds a secret.
SELECT name, setting, unit, context, vartype, min_val, max_val
FROM pg_settings WHERE name LIKE 'plivo\_otp.%' ORDER BY name;

-- Bounds.
SET plivo_otp.code_length = 3;
SET plivo_otp.code_length = 11;
SET plivo_otp.max_attempts = 0;
-- Templates must carry the code.
SET plivo_otp.sms_template = 'Welcome!';
SET plivo_otp.sms_template = 'Code: {code}';
SHOW plivo_otp.sms_template;
RESET plivo_otp.sms_template;
-- Allow-list syntax.
SET plivo_otp.allowed_countries = '+44';
SET plivo_otp.allowed_countries = '44,,1';
SET plivo_otp.allowed_countries = 'uk';
SET plivo_otp.allowed_countries = '1234567';
SET plivo_otp.allowed_countries = '1, 44 ,1876';
RESET plivo_otp.allowed_countries;
-- A lifetime beyond NIST's 10 minutes is allowed, with a warning.
SET plivo_otp.code_ttl = '10min';
SET plivo_otp.code_ttl = '20min';
SHOW plivo_otp.code_ttl;
RESET plivo_otp.code_ttl;
-- Server-wide settings cannot be changed in a session at all.
SET plivo_otp.api_url = 'http://127.0.0.1:1';
SET plivo_otp.key_file = '/tmp/other.key';
SET plivo_otp.auth_id = 'MAXXXXXXXXXXXXXXXXXX';
-- URLs: https, except for loopback addresses (local stand-ins and tests).
ALTER SYSTEM SET plivo_otp.api_url = 'http://api.plivo.com';
ALTER SYSTEM SET plivo_otp.api_url = 'http://127.0.0.1:1@evil.example';
ALTER SYSTEM SET plivo_otp.public_url = 'http://otp.example.com';
ALTER SYSTEM SET plivo_otp.public_url = 'https://otp.example.com/?tenant=1';
-- The prefix is reserved: misspelt settings are errors, not silent placeholders.
SET plivo_otp.code_lenght = 6;

-- No setting is a secret: the token and the key live in files.
SELECT name FROM pg_settings
WHERE name LIKE 'plivo_otp.%' AND (name LIKE '%token' OR name LIKE '%secret' OR name LIKE '%key');
