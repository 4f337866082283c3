package postgres

import (
	"context"
	"testing"
)

func TestAppendValueUnit(t *testing.T) {
	num := builtinScalars[oidNumeric]
	tests := []struct {
		name string
		ti   *typeInfo
		in   string
		want string
	}{
		{"int", builtinScalars[oidInt4], "-42", "-42"},
		{"nan", num, "NaN", `"NaN"`},
		{"inf", builtinScalars[oidFloat8], "-Infinity", `"-Infinity"`},
		{"exp", builtinScalars[oidFloat8], "1e+100", "1e+100"},
		{"bool", builtinScalars[oidBool], "t", "true"},
		{"ts", builtinScalars[oidTimestamp], "2026-11-26 10:15:02.5", `"2026-11-26T10:15:02.5"`},
		{"ts bc", builtinScalars[oidTimestamp], "0044-03-15 10:00:00 BC", `"0044-03-15T10:00:00 BC"`},
		{"tstz", builtinScalars[oidTimestampTZ], "2026-11-26 10:15:02+00", `"2026-11-26T10:15:02+00:00"`},
		{"tstz minutes", builtinScalars[oidTimestampTZ], "2026-11-26 10:15:02-03:30", `"2026-11-26T10:15:02-03:30"`},
		{"tstz bc", builtinScalars[oidTimestampTZ], "0044-03-15 10:00:00+00 BC", `"0044-03-15T10:00:00+00:00 BC"`},
		{"tstz inf", builtinScalars[oidTimestampTZ], "-infinity", `"-infinity"`},
		{"text", textType, "a\"b\n", `"a\"b\n"`},
		{"array", &typeInfo{kind: kindArray, elem: builtinScalars[oidInt4], delim: ','}, "{{1,2},{NULL,4}}", "[[1,2],[null,4]]"},
		{"array bounds", &typeInfo{kind: kindArray, elem: builtinScalars[oidInt4], delim: ','}, "[0:1]={1,2}", "[1,2]"},
		{"array empty", &typeInfo{kind: kindArray, elem: textType, delim: ','}, "{}", "[]"},
		{"array quoted", &typeInfo{kind: kindArray, elem: textType, delim: ','}, `{"a b","c\"d",NULL,"NULL",""}`, `["a b","c\"d",null,"NULL",""]`},
		{"array broken", &typeInfo{kind: kindArray, elem: textType, delim: ','}, `{"a`, `"{\"a"`},
		{"box array", &typeInfo{kind: kindArray, elem: textType, delim: ';'}, `{(1,1),(0,0);(2,2),(1,1)}`, `["(1,1),(0,0)","(2,2),(1,1)"]`},
		{"vector", &typeInfo{kind: kindVector, elem: builtinScalars[oidInt2]}, "1 2 3", "[1,2,3]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendValue(nil, tt.ti, []byte(tt.in)))
			if got != tt.want {
				t.Errorf("appendValue(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// valueCases are SQL expressions whose JSON form must equal PostgreSQL's
// to_jsonb of the same value.
var valueCases = []string{
	"true", "false",
	"32767::int2", "(-2147483648)::int4", "9223372036854775807::int8",
	"1.5::float4", "'1e-5'::float4", "'NaN'::float4", "'Infinity'::float4", "'-Infinity'::float8", "1e100::float8", "0.1::float8", "'-0'::float8", "1.7976931348623157e308::float8",
	"12345678901234567890.123456789012345678901234567890::numeric", "'NaN'::numeric", "'Infinity'::numeric", "'-Infinity'::numeric", "0.000::numeric", "-1.50::numeric(10,2)",
	"'plain'::text", "E'quote \" backslash \\\\ tab \t newline \n ctrl \\x01 unicode é €'::text", "''::text", "'x'::varchar(10)", "'ab'::char(4)", "'\u2028'::text",
	"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
	"'2026-11-26'::date", "'infinity'::date", "'-infinity'::date", "'0001-01-01 BC'::date", "'10000-01-01'::date",
	"'10:15:02.5'::time", "'24:00:00'::time", "'10:15:02+05:30'::timetz", "'10:15:02-00:00:15'::timetz",
	"'2026-11-26 10:15:02.123456'::timestamp", "'infinity'::timestamp", "'0044-03-15 10:00 BC'::timestamp", "'294276-12-31 23:59:59'::timestamp",
	"'2026-11-26 10:15:02.123456+02'::timestamptz", "'-infinity'::timestamptz", "'0044-03-15 10:00+00 BC'::timestamptz", "'1850-01-01 00:00+00'::timestamptz",
	"'1 year 2 mons 3 days 04:05:06.7'::interval", "'-1 day -00:00:01'::interval", "'0'::interval",
	"'\\x0102ff'::bytea", "''::bytea",
	`'{"b": 1, "a": [1, 2.50, null, "x"], "a": 3}'::json`, `'  [1, {"k": "v"}]  '::json`, `'"str"'::json`, `'null'::json`,
	`'{"b": 1, "a": [1, 2.50, null, "x"]}'::jsonb`, `'12.30'::jsonb`,
	"'happy'::mood", "42::posint", "'dom text'::shorttext", "'{1,2}'::intlist", "ARRAY[1,NULL]::posint[]",
	"'192.168.0.1/24'::inet", "'::1'::inet", "'10.0.0.0/8'::cidr", "'08:00:2b:01:02:03'::macaddr",
	"'1234.56'::money", "'-0.01'::money",
	"ARRAY[true, NULL, false]", "'{{1,2},{3,NULL}}'::int[]", "'[0:1]={1,2}'::int4[]", "'{}'::int[]", "ARRAY[]::text[]",
	"ARRAY[1.5::float8, 'NaN', '-Infinity']", "ARRAY[1::numeric, 'NaN']", "ARRAY['a b', 'c\"d', NULL, 'NULL', '', '{x}', 'back\\slash']",
	"ARRAY[ARRAY['a','b'],ARRAY[NULL,'d']]", "ARRAY['{\"a\":1}'::jsonb, NULL]", "ARRAY['[1,2]'::json]",
	"ARRAY['2020-01-01 00:00+00'::timestamptz, 'infinity']", "ARRAY['2020-01-01 12:00'::timestamp]", "ARRAY['2020-01-01'::date]",
	"ARRAY['10:00'::time]", "ARRAY['10:00+01'::timetz]", "ARRAY['1 day'::interval]", "ARRAY['\\xdead'::bytea, NULL]",
	"ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]", "ARRAY['happy'::mood, 'sad']", "ARRAY['1.2.3.4'::inet]", "ARRAY['10.0.0.0/8'::cidr]",
	"ARRAY['08:00:2b:01:02:03'::macaddr]", "ARRAY['1'::money]", "ARRAY['x'::char(3)]", "ARRAY['v'::varchar]", "ARRAY[1::int2, 2]", "ARRAY[1::int8]",
	"ARRAY[1.5::float4]", "'{{{1}},{{2}}}'::int[]",
	"'(1,2)'::point", "'[1,5)'::int4range", "'a & b'::tsquery", "B'101'", "'<a>x</a>'::xml", "'1 2'::int2vector", "ROW(1,'x')::pair", "ROW(NULL,'')::pair", "ROW(2,'a \"q\" (b), \\c')::pair", "ARRAY[ROW(1,'x')::pair, NULL]", "ROW(ROW(1,'y')::pair, ARRAY[1,2])::nested",
	"'{\"(1,1),(0,0)\"}'::box[]",
}

func TestValuesMatchToJSONB(t *testing.T) {
	_, url := newDB(t)
	ctx := context.Background()
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TYPE mood AS ENUM ('happy', 'sad');
		CREATE DOMAIN posint AS int CHECK (VALUE > 0);
		CREATE DOMAIN shorttext AS text;
		CREATE DOMAIN intlist AS int[];
		CREATE TYPE pair AS (a int, b text);
		CREATE TYPE nested AS (p pair, l int[])`)
	types := newTypeCache()
	for _, expr := range valueCases {
		res, err := conn.PgConn().Exec(ctx, "SELECT "+expr).ReadAll()
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		oid := res[0].FieldDescriptions[0].DataTypeOID
		text := res[0].Rows[0][0]
		infos, err := types.resolve(ctx, conn, []uint32{oid})
		if err != nil {
			t.Fatal(err)
		}
		got := appendValue(nil, infos[oid], text)
		var equal bool
		var want string
		if err := conn.QueryRow(ctx, "SELECT $1::jsonb = to_jsonb("+expr+"), to_jsonb("+expr+")::text", string(got)).Scan(&equal, &want); err != nil {
			t.Errorf("%s: comparing %s: %v", expr, got, err)
			continue
		}
		if !equal {
			t.Errorf("%s: text %q gives %s, to_jsonb gives %s", expr, text, got, want)
		}
	}
}
