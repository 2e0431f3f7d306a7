# The dashboards' indexes (issue 13): counts read from an index alone on PostgreSQL.

import django.db.models.deletion
from django.db import migrations, models


def drop_laptop_server_index(apps, schema_editor):
    """Drop the laptop's foreign-key index on `server_id` alone: `laptop_server_seen` starts
    with the same column. Dropped as an index only: altering the field in the database
    would drop and re-add the foreign key (PostgreSQL then checks every laptop again, under
    an exclusive lock) or copy the whole table (SQLite)."""
    laptop = apps.get_model("schools", "Laptop")
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, laptop._meta.db_table)
    for name, info in constraints.items():
        plain = info["index"] and not info["unique"] and not info["primary_key"]
        if plain and info["columns"] == ["server_id"]:
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


def create_laptop_server_index(apps, schema_editor):
    laptop = apps.get_model("schools", "Laptop")
    schema_editor.add_index(laptop, models.Index(fields=["server"], name="schools_laptop_server"))


class Migration(migrations.Migration):
    dependencies = [
        ("releases", "0007_usb_kit_sha1"),
        ("schools", "0006_laptops"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="syncstate",
            index=models.Index(
                fields=["build", "status", "server"],
                include=("held_since",),
                name="syncstate_build_held",
            ),
        ),
        migrations.RemoveIndex(
            model_name="syncstate",
            name="schools_syn_build_i_428ab0_idx",
        ),
        migrations.AddIndex(
            model_name="laptop",
            index=models.Index(
                fields=["server", "last_seen_at"],
                include=("vhash", "free_space_kib"),
                name="laptop_server_seen",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="laptop",
                    name="server",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="The school server whose address the laptop reported from.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="laptops",
                        to="schools.schoolserver",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_laptop_server_index, create_laptop_server_index),
            ],
        ),
        migrations.AddIndex(
            model_name="schoolserver",
            index=models.Index(
                fields=["department", "school", "hostname"], name="schoolserver_listing"
            ),
        ),
    ]
