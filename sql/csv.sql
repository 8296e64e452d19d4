--
-- csv: export_activity_csv, RFC 4180 quoting and formula neutralisation.
--

-- One cell at a time (to_json shows control characters).  Quoted: a
-- comma, a double quote, CR, LF, the empty string.  A leading = + - @ tab
-- or CR gets a ' in front, so does a leading ' (so one ' can always be
-- dropped again).  NULL is an empty cell.
SELECT to_json(value) AS value, to_json(presence._csv_cell(value)) AS cell
  FROM (VALUES ('plain'), ('a,b'), ('say "hi"'), (E'two\nlines'), (E'cr\rhere'), (E'crlf\r\nend'),
			   (''), (NULL), ('=1+1'), ('+1'), ('-1'), ('@SUM(A1)'), (E'\tindented'), (E'\rreturn'),
			   ('''quoted'), ('=HYPERLINK("http://x","y")'), ('a=b'), (' =spaced'), ('1-2')) AS v(value);

-- A session with fixed rows, so the whole export is fixed.
INSERT INTO presence.users (id, username) VALUES
	('00000000-0000-4000-8000-000000000501', '=cmd|'' /C calc''!A0'),
	('00000000-0000-4000-8000-000000000502', 'Doe, "Jane"'),
	('00000000-0000-4000-8000-000000000503', '''apostrophe');
INSERT INTO presence.collaboration_sessions (id, session_id, owner_id)
VALUES ('00000000-0000-4000-8000-00000000c501', 'csv-s', '00000000-0000-4000-8000-000000000501');
INSERT INTO presence.activity_log (id, session_id, user_id, activity_type, details, ip_address, user_agent, created_at)
VALUES ('00000000-0000-4000-8000-00000000a501', '00000000-0000-4000-8000-00000000c501',
		'00000000-0000-4000-8000-000000000501', 'user_joined', '{}', '192.0.2.10', '+agent', '2024-05-01 08:00:00+00'),
	   ('00000000-0000-4000-8000-00000000a502', '00000000-0000-4000-8000-00000000c501',
		'00000000-0000-4000-8000-000000000502', 'comment_added', '{"text": "a, \"quoted\"\r\nsecond line"}',
		'10.0.0.0/8', E'-agent\r\nsecond', '2024-05-01 08:00:01.5+00'),
	   ('00000000-0000-4000-8000-00000000a503', '00000000-0000-4000-8000-00000000c501',
		'00000000-0000-4000-8000-000000000503', 'comment_added', '{"text": "=1+2"}',
		'2001:db8::5', '@agent', '2024-05-01 08:00:02+00'),
	   ('00000000-0000-4000-8000-00000000a504', '00000000-0000-4000-8000-00000000c501',
		NULL, 'system.note', '{}', NULL, E'\tagent', '2024-05-01 08:00:03+00'),
	   ('00000000-0000-4000-8000-00000000a505', '00000000-0000-4000-8000-00000000c501',
		NULL, 'system.note', '{}', NULL, '', '2024-05-01 08:00:04+00');

-- The export; CR is shown as <CR> (every line ends in CR LF).
\pset format unaligned
SELECT replace(presence.export_activity_csv('csv-s'), E'\r', '<CR>') AS csv;
\pset format aligned

-- A session without activity: the header only.
INSERT INTO presence.collaboration_sessions (id, session_id, owner_id)
VALUES ('00000000-0000-4000-8000-00000000c502', 'csv-empty', '00000000-0000-4000-8000-000000000501');
SELECT to_json(presence.export_activity_csv('csv-empty')) AS csv;

SELECT regress.try($$SELECT presence.export_activity_csv('csv-none')$$);
SELECT regress.try($$SELECT presence.export_activity_csv(NULL)$$);
