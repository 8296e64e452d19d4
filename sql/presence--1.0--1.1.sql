/*
 * presence 1.0 -> 1.1
 *
 * _ensure_user no longer gives up when the name a token carries is taken
 * twice over (the name itself and the name with the first block of the
 * id): it tries the name with the whole id, then with random digits, so
 * another user's name can never lock a new user out.  When even that
 * fails it raises unique_violation, which a ws worker answers with 4001
 * and a reason instead of retrying forever.
 */
\echo Use "ALTER EXTENSION presence UPDATE TO '1.1'" to load this file. \quit

CREATE OR REPLACE FUNCTION presence._ensure_user(p_id uuid, p_name text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	result text;
	suffix text;
BEGIN
	SELECT username INTO result FROM presence.users WHERE id = p_id;
	IF FOUND THEN
		RETURN result;
	END IF;
	FOR attempt IN 0..5 LOOP
		suffix := CASE attempt
					  WHEN 0 THEN NULL
					  WHEN 1 THEN left(p_id::text, 8)
					  WHEN 2 THEN replace(p_id::text, '-', '')
					  ELSE left(replace(gen_random_uuid()::text, '-', ''), 12)
				  END;
		INSERT INTO presence.users (id, username)
		VALUES (p_id, CASE WHEN suffix IS NULL THEN p_name
						   ELSE left(p_name, 253 - length(suffix)) || ' #' || suffix END)
		ON CONFLICT DO NOTHING
		RETURNING username INTO result;
		IF result IS NOT NULL THEN
			RETURN result;
		END IF;
		-- another worker may have added this very user meanwhile
		SELECT username INTO result FROM presence.users WHERE id = p_id;
		IF FOUND THEN
			RETURN result;
		END IF;
	END LOOP;
	RAISE EXCEPTION 'presence: no free username for user % (named "%")', p_id, left(p_name, 64)
		USING ERRCODE = 'unique_violation';
END $$;
