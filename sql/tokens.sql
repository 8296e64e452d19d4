--
-- tokens: issue_token() makes an HS256 JWT signed with presence.jwt_secret
-- (test/regress.conf).  Its times vary, so this checks the structure, the
-- claims against each other and the signature, recomputed in SQL.
--
INSERT INTO presence.users (id, username) VALUES ('00000000-0000-4000-8000-000000000601', 'tok-ann');

-- base64url without padding, and HMAC-SHA256 (RFC 2104) from sha256().
CREATE FUNCTION regress.base64url_decode(value text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
	SELECT decode(rpad(translate(value, '-_', '+/'), (length(value) + 3) / 4 * 4, '='), 'base64')
$$;
CREATE FUNCTION regress.base64url_encode(value bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT rtrim(translate(replace(encode(value, 'base64'), E'\n', ''), '+/', '-_'), '=')
$$;
CREATE FUNCTION regress.hmac_sha256(key bytea, message bytea) RETURNS bytea LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	k bytea := CASE WHEN length(key) > 64 THEN sha256(key) ELSE key END;
	inner_pad bytea;
	outer_pad bytea;
BEGIN
	k := k || decode(repeat('00', 64 - length(k)), 'hex');
	inner_pad := k;
	outer_pad := k;
	FOR i IN 0..63 LOOP
		inner_pad := set_byte(inner_pad, i, get_byte(k, i) # 54);	-- 0x36
		outer_pad := set_byte(outer_pad, i, get_byte(k, i) # 92);	-- 0x5c
	END LOOP;
	RETURN sha256(outer_pad || sha256(inner_pad || message));
END $$;
-- The RFC 4231 test case 2 vector checks the helper itself.
SELECT encode(regress.hmac_sha256('Jefe', 'what do ya want for nothing?'), 'hex') AS rfc4231_case2;

CREATE TABLE regress.tokens AS
SELECT presence.issue_token('00000000-0000-4000-8000-000000000601') AS token,
	   extract(epoch FROM now())::bigint AS issued;
SELECT array_length(string_to_array(token, '.'), 1) AS parts FROM regress.tokens;
SELECT convert_from(regress.base64url_decode(split_part(token, '.', 1)), 'UTF8')::jsonb AS header FROM regress.tokens;
CREATE VIEW regress.claims AS
SELECT convert_from(regress.base64url_decode(split_part(token, '.', 2)), 'UTF8')::jsonb AS claims, issued, token
  FROM regress.tokens;
SELECT array(SELECT jsonb_object_keys(claims) ORDER BY 1) AS claim_names,
	   claims->>'sub' AS sub, claims->>'name' AS name, claims->>'iss' AS iss,
	   (claims->>'exp')::bigint - (claims->>'iat')::bigint AS lifetime,
	   abs((claims->>'iat')::bigint - issued) <= 5 AS issued_now
  FROM regress.claims;
-- The signature is HMAC-SHA256 of "header.claims" with the secret.
SELECT regress.base64url_encode(regress.hmac_sha256(convert_to(current_setting('presence.jwt_secret'), 'UTF8'),
													convert_to(split_part(token, '.', 1) || '.' || split_part(token, '.', 2), 'UTF8')))
	   = split_part(token, '.', 3) AS signature_verifies,
	   regress.base64url_encode(regress.hmac_sha256('another secret',
													convert_to(split_part(token, '.', 1) || '.' || split_part(token, '.', 2), 'UTF8')))
	   = split_part(token, '.', 3) AS verifies_with_another_secret
  FROM regress.tokens;

-- A username given wins over the stored one; a user not in presence.users
-- gets a token too (the workers add it at authentication), without a name
-- unless one is given.
SELECT claims->>'name' AS name
  FROM (SELECT convert_from(regress.base64url_decode(split_part(
			presence.issue_token('00000000-0000-4000-8000-000000000601', '5 minutes', 'Ann Example'), '.', 2)), 'UTF8')::jsonb) c(claims);
SELECT array(SELECT jsonb_object_keys(claims) ORDER BY 1) AS claim_names, claims->>'sub' AS sub
  FROM (SELECT convert_from(regress.base64url_decode(split_part(
			presence.issue_token('00000000-0000-4000-8000-0000000006ff'), '.', 2)), 'UTF8')::jsonb) c(claims);

-- ttl: from one second to 366 days; a month counts 30 days.
SELECT ttl, r AS result,
	   CASE WHEN r = 'ok' THEN (SELECT (c->>'exp')::bigint - (c->>'iat')::bigint
								  FROM (SELECT convert_from(regress.base64url_decode(split_part(
											presence.issue_token('00000000-0000-4000-8000-000000000601', ttl::interval), '.', 2)),
											'UTF8')::jsonb) x(c)) END AS lifetime
  FROM (VALUES ('1 second'), ('366 days'), ('12 mons'), ('367 days'), ('13 mons'), ('0'), ('0.5 seconds'),
			   ('-1 hour'), ('1 day -25 hours')) v(ttl),
	   LATERAL (SELECT regress.try(format('SELECT presence.issue_token(%L, %L)',
										  '00000000-0000-4000-8000-000000000601', ttl))) t(r);

-- Errors.
SELECT regress.try($$SELECT presence.issue_token(NULL)$$);
SELECT regress.try($$SELECT presence.issue_token('00000000-0000-4000-8000-000000000601', NULL)$$);
SELECT regress.try($$SELECT presence.issue_token('00000000-0000-4000-8000-000000000601', '1 hour', '')$$);
SELECT regress.try($$SELECT presence.issue_token('00000000-0000-4000-8000-000000000601', '1 hour', repeat('n', 256))$$);
SELECT regress.try($$SELECT presence.issue_token('00000000-0000-4000-8000-000000000601', '1 hour', repeat('n', 255))$$);
