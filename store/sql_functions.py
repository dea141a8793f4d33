"""The functions user SQL may call: one reviewed allow-list, and what was refused and why.

Everything DuckDB offers is either allowed here or refused here, by name;
``tests/test_sql_functions.py`` lists ``duckdb_functions()`` of the installed DuckDB
and fails on any name in neither list, so an upgrade that adds functions cannot widen
the sandbox until someone has read them. Allowed means: computes on its arguments
only. Refused means it reads (or writes) something else: settings, the catalog, files,
the environment, logs, sequences, the clock of another session — or it only exists
for DuckDB's internals. A built-in *macro* is allowed only when its definition calls
allowed functions alone (checked by the same test), since a macro such as
``pg_get_viewdef`` expands into a table function that the statement never names.

Table functions are a separate, short list: they produce rows, and only these five
compute them from their arguments. Names are matched case-insensitively.
"""

from __future__ import annotations

# The DuckDB release these lists were reviewed against (``pyproject.toml`` pins the
# minor version; the test fails when another version adds or drops functions).
REVIEWED_DUCKDB = "2.0.1"


def _names(text: str) -> frozenset[str]:
    return frozenset(n.lower() for n in text.split())


# Scalar functions and operators that compute on their arguments.
SCALAR = _names("""
!= !__postfix !~~ !~~* % & && * ** + - ->> / // < <-> << <= <=> <@ = > >= >> @ @> ^ ^@ | || ~
~~ ~~* ~~~ abs acos acosh add age aggregate alias apply array_aggr array_aggregate array_apply
array_cat array_concat array_contains array_cosine_distance array_cosine_similarity
array_cross_product array_distance array_distinct array_dot_product array_extract array_filter
array_grade_up array_has array_has_all array_has_any array_indexof array_inner_product
array_intersect array_length array_negative_dot_product array_negative_inner_product
array_position array_reduce array_resize array_reverse_sort array_select array_slice
array_sort array_to_json array_transform array_unique array_value array_where array_zip ascii
asin asinh atan atan2 atanh bar base64 bin binom bit_count bit_length bit_position bitstring
bitstring_byte_comparable can_cast_implicitly cardinality cast_to_type cbrt ceil ceiling
century char_length character_length chr combine concat concat_ws constant_or_null contains
cos cosh cot create_sort_key current_date current_localtime current_localtimestamp
damerau_levenshtein date_diff date_part date_sub date_trunc datediff datepart datesub
datetrunc day dayname dayofmonth dayofweek dayofyear decade decimal_division decode degrees
divide editdist3 element_at encode ends_with enum_code enum_first enum_last enum_range
enum_range_boundary epoch epoch_ms epoch_ns epoch_us equi_width_bins era error even exp
factorial filter finalize flatten floor fmod format format_bytes formatReadableDecimalSize
formatReadableSize from_base64 from_binary from_hex from_json from_json_strict gamma gcd
gen_random_uuid generate_series get_bit get_current_time get_current_timestamp get_type grade_up
greatest greatest_common_divisor hamming hash hex hive_partition_component hour icu_sort_key
ilike_escape instr invoke is_histogram_other_bin isfinite isinf isnan isodow isoyear jaccard
jaro_similarity jaro_winkler_similarity json_array json_array_length json_contains
json_deep_merge json_exists json_extract json_extract_path json_extract_path_text
json_extract_string json_insert json_keys json_merge_patch json_merge_patch_diff
json_normalize json_object json_pretty json_quote json_remove json_replace json_set
json_strip_nulls json_structure json_transform json_transform_strict json_type json_valid
json_value julian last_day lcase lcm least least_common_multiple left left_grapheme len
length length_grapheme levenshtein lgamma like_escape list_aggr list_aggregate list_apply
list_cat list_concat list_contains list_cosine_distance list_cosine_similarity list_distance
list_distinct list_dot_product list_element list_extract list_filter list_grade_up list_has
list_has_all list_has_any list_indexof list_inner_product list_intersect
list_negative_dot_product list_negative_inner_product list_pack list_position list_reduce
list_resize list_reverse_sort list_select list_slice list_sort list_transform list_unique
list_value list_where list_zip ln log log10 log2 lower lpad ltrim make_date make_time
make_timestamp make_timestamp_ms make_timestamp_ns make_timestamptz map map_concat
map_contains map_entries map_extract map_extract_value map_from_entries map_keys map_values md5
md5_number microsecond millennium millisecond minute mismatches mod month monthname multiply
nanosecond nextafter nfc_normalize normalized_interval not_ilike_escape not_like_escape now
octet_length ord overlay parse_dirname parse_dirpath parse_filename parse_formatted_bytes
parse_path path_join pi position pow power prefix printf quarter radians random range reduce
regexp_escape regexp_extract regexp_extract_all regexp_full_match regexp_matches
regexp_replace regexp_split_to_array remap_struct repeat replace replace_type reverse right
right_grapheme round round_even roundbankers row row_to_json rpad rtrim second set_bit setseed
sha1 sha256 sign signbit sin sinh split sqrt st_asbinary st_asgeojson st_astext st_aswkb
st_aswkt st_crs st_geomfromgeojson st_geomfromwkb st_intersects_extent st_setcrs starts_with
str_split str_split_regex strftime string_split string_split_regex string_to_array
strip_accents strlen strpos strptime struct_concat struct_contains struct_extract
struct_extract_at struct_has struct_indexof struct_insert struct_keys struct_pack
struct_position struct_update struct_values substr substring substring_grapheme subtract
suffix switch tan tanh time_bucket timetz_byte_comparable timezone timezone_hour
timezone_minute to_aggregate_state to_base to_base64 to_binary to_centuries to_days
to_decades to_hex to_hours to_json to_microseconds to_millennia to_milliseconds to_minutes
to_months to_quarters to_seconds to_timestamp to_weeks to_years today transaction_timestamp
translate trim trunc try_strptime typeof ucase unbin unhex unicode union_extract union_tag
union_value unpivot_list upper url_decode url_encode uuid uuid_extract_timestamp
uuid_extract_version uuidv4 uuidv7 variant_array_length variant_bytes_to_variant
variant_comparator variant_contains variant_exists variant_extract variant_extract_string
variant_keys variant_normalize variant_to_parquet_variant variant_type variant_typeof
vertex_extract week weekday weekofyear xor year yearweek
""") | frozenset({"is distinct from", "is not distinct from"})

# Collations (``x COLLATE de``, ``icu_collate_de(x)``): pure, and a long list.
COLLATION_PREFIXES = ("collate_", "icu_collate_")

AGGREGATE = _names("""
any_value approx_count_distinct approx_quantile approx_top_k arbitrary arg_max arg_max_null
arg_max_nulls_last arg_min arg_min_null arg_min_nulls_last argmax argmin array_agg avg bit_and
bit_or bit_xor bitstring_agg bool_and bool_or combine_aggr corr count count_if count_star
countif covar_pop covar_samp decimal_average entropy favg first fsum group_concat histogram
histogram_exact kahan_sum kurtosis kurtosis_pop last list listagg lttb mad max max_by mean
median min min_by mode product quantile quantile_cont quantile_disc regr_avgx regr_avgy
regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy reservoir_quantile sem
skewness stddev stddev_pop stddev_samp string_agg sum sum_no_overflow sumkahan var_pop var_samp
variance variant_group_object
""")

WINDOW = _names("""
cume_dist dense_rank fill first_value lag last_value lead nth_value ntile percent_rank rank
rank_dense row_number
""")

# Built-in macros whose definitions call allowed functions only.
MACRO = _names("""
ago array_append array_pop_back array_pop_front array_prepend array_push_back array_push_front
array_reverse array_to_string array_to_string_comma_default assert_true col_description
current_role current_user date_add days_in_month fdiv format_pg_type generate_subscripts
geomean geometric_mean has_any_column_privilege has_column_privilege has_database_privilege
has_foreign_data_wrapper_privilege has_function_privilege has_language_privilege
has_schema_privilege has_sequence_privilege has_server_privilege has_table_privilege
has_tablespace_privilege if inet_client_addr inet_client_port inet_server_addr
inet_server_port json json_copy_strftime_if_date json_copy_strftime_if_timestamp
json_group_array json_group_object json_group_structure list_any_value list_append
list_approx_count_distinct list_avg list_bit_and list_bit_or list_bit_xor list_bool_and
list_bool_or list_count list_entropy list_first list_histogram list_kurtosis list_kurtosis_pop
list_last list_mad list_max list_median list_min list_mode list_prepend list_product
list_reverse list_sem list_skewness list_stddev_pop list_stddev_samp list_string_agg list_sum
list_var_pop list_var_samp map_contains_entry map_contains_value map_to_pg_oid
map_type_id_to_pg_oid md5_number_lower md5_number_upper nullif obj_description
pg_collation_is_visible pg_conf_load_time pg_conversion_is_visible pg_function_is_visible
pg_get_expr pg_has_role pg_is_other_temp_schema pg_my_temp_schema pg_opclass_is_visible
pg_operator_is_visible pg_opfamily_is_visible pg_postmaster_start_time pg_size_pretty
pg_table_is_visible pg_ts_config_is_visible pg_ts_dict_is_visible pg_ts_parser_is_visible
pg_ts_template_is_visible pg_type_is_visible pg_typeof regexp_split_to_table session_user
shobj_description split_part user variant_group_array wavg weighted_avg
""")

# Not a function of duckdb_functions()' expression kinds: UNNEST in a select list.
SPECIAL = _names("unnest unlist")

# Our own macros (``store.duck.MACROS``), documented in the README.
OURS = _names("label message_text last_user_message")

# Table functions that compute rows from their arguments and touch nothing else.
TABLE = _names("range generate_series unnest json_each json_tree")

# Every function user SQL may call in an expression.
FUNCTIONS = SCALAR | AGGREGATE | WINDOW | MACRO | SPECIAL | OURS

_SETTINGS = "reads settings or session state"
_CATALOG = "reads the catalog"
_INTERNAL = "DuckDB internals (debugging or plan rewrites)"

# Reviewed and refused. Table functions, table macros and pragmas not in TABLE are
# refused as a class (they read files, the catalog, settings, logs or the network).
REFUSED: dict[str, str] = {
    **dict.fromkeys(
        _names("""current_setting getvariable current_connection_id current_query
        current_query_id current_transaction_id txid_current version current_catalog
        current_database current_query current_schema current_schemas"""),
        _SETTINGS,
    ),
    **dict.fromkeys(
        _names("""in_search_path currval nextval setval index_key make_type get_block_size
        pg_get_viewdef pg_get_constraintdef format_type"""),
        _CATALOG,
    ),
    "stats": "shows the statistics of the files a view reads, rows of other use cases too",
    "vector_type": _INTERNAL,
    "json_serialize_plan": "binds a query given as a string, out of the checker's sight",
    "json_serialize_sql": _INTERNAL,
    "json_deserialize_sql": _INTERNAL,
    "write_log": "writes to DuckDB's log",
    "parse_duckdb_log_message": "made for DuckDB's log",
    "sleep_ms": "holds a worker thread without doing work",
    "pg_sleep": "holds a worker thread without doing work",
}
INTERNAL_PREFIX = "__"  # __internal_*, __cast, __between: not meant to be called by name


def allowed_function(name: str) -> bool:
    """May user SQL call ``name`` in an expression (scalar, aggregate, window, macro)?"""
    n = name.lower()
    return n in FUNCTIONS or n.startswith(COLLATION_PREFIXES)


def allowed_table_function(name: str) -> bool:
    return name.lower() in TABLE
